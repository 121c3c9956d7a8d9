//! Macros shared by the core's modules. Kept apart so that no module has to import another
//! only for a macro (counters, control messages and configuration stay free of import cycles).

/// Declares a fieldless enum with a dense index, a stable snake_case name and a `COUNT`.
macro_rules! named_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v,)+ }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$($name::$v,)+];
            /// Number of values.
            pub const COUNT: usize = Self::ALL.len();
            /// Dense index, `0..COUNT`.
            #[inline]
            pub const fn index(self) -> usize { self as usize }
            /// Stable snake_case name (used in metrics).
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $s,)+ }
            }
        }
    };
}
pub(crate) use named_enum;
