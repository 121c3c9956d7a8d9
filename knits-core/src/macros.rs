//! Macros shared by the core's modules. Kept apart so that no module has to import another
//! only for a macro (counters, control messages and configuration stay free of import cycles).

/// Declares a fieldless enum with a dense index, a stable snake_case name (for metric labels),
/// `ALL` (every value, in index order) and `COUNT`. Exported: knits-proxy declares its label
/// enums with it too. Attributes written before `pub enum` go on the enum (the core's own enums
/// add `defmt::Format` that way, under its feature).
#[macro_export]
macro_rules! named_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v,)+ }

        impl $name {
            /// Every value, in index order.
            pub const ALL: [$name; <[&str]>::len(&[$($s,)+])] = [$($name::$v,)+];
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
