//! The one macro for the proxy's label enums: a fieldless enum with a dense index, a stable
//! snake_case name (the metric label) and `ALL` / `COUNT`.
//!
//! It is knits-core's `named_enum!` (`knits-core/src/macros.rs`), which the core keeps
//! crate-private; `ALL` is an array here (callers iterate it by value). Once the core exports
//! its macro, this module can go.

/// Declares a fieldless enum with a dense index, a stable snake_case name, `ALL` and `COUNT`.
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
            /// Stable snake_case name (the metric label).
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $s,)+ }
            }
        }
    };
}
pub(crate) use named_enum;
