//! Which types may live in shared memory: [`ShmSafe`] (copied in and out) and [`ShmAtomic`]
//! (borrowed in place, because all their state is atomic).

pub use crate::sys::{ShmAtomic, ShmSafe};

#[doc(hidden)]
pub mod __private {
    pub use static_assertions::const_assert_eq;
    pub const fn assert_shm_safe<T: super::ShmSafe>() {}
    pub const fn assert_shm_atomic<T: super::ShmAtomic>() {}
}

/// Declares a `#[repr(C)]` struct of plain fields and implements [`ShmSafe`] for it, after
/// checking at compile time that every field is `ShmSafe` and that there is no padding (the
/// fields lie back to back and their sizes add up to the struct's).
///
/// The macro writes the struct itself, `#[repr(C)]` first, so the layout cannot be Rust's
/// unspecified one: a `macro_rules!` macro given only a type's name could not tell. Attributes
/// (derives, docs) and visibilities pass through.
///
/// ```
/// use ipc_shm::{shm_safe, ShmSafe};
///
/// shm_safe! {
///     /// One sample, as both processes see it.
///     #[derive(Clone, Copy, Debug, PartialEq)]
///     pub struct Sample { pub seq: u64, pub value: f32, pub flags: u32 }
/// }
/// fn needs<T: ShmSafe>() {}
/// needs::<Sample>();
/// ```
///
/// A struct declared elsewhere (so perhaps without `#[repr(C)]`) cannot be vouched for:
///
/// ```compile_fail
/// use ipc_shm::shm_safe;
/// #[derive(Clone, Copy)]
/// struct RustLayout { a: u32, b: u32 }
/// shm_safe!(RustLayout { a: u32, b: u32 });
/// ```
///
/// Nor does a struct with padding, a field that is not `ShmSafe`, trailing padding from a
/// larger alignment, or another representation compile:
///
/// ```compile_fail
/// ipc_shm::shm_safe! { #[derive(Clone, Copy)] struct Padded { a: u8, b: u64 } }
/// ```
/// ```compile_fail,E0277
/// ipc_shm::shm_safe! { #[derive(Clone, Copy)] struct HasBool { ok: bool, pad: [u8; 3], n: u32 } }
/// ```
/// ```compile_fail
/// ipc_shm::shm_safe! { #[repr(align(16))] #[derive(Clone, Copy)] struct Wide { n: u64 } }
/// ```
/// ```compile_fail,E0566
/// ipc_shm::shm_safe! { #[repr(Rust)] #[derive(Clone, Copy)] struct Plain { n: u64 } }
/// ```
#[macro_export]
macro_rules! shm_safe {
    (
        $(#[$attr:meta])*
        $vis:vis struct $t:ident {
            $( $(#[$fattr:meta])* $fvis:vis $f:ident : $ft:ty ),* $(,)?
        }
    ) => {
        #[repr(C)]
        $(#[$attr])*
        $vis struct $t {
            $( $(#[$fattr])* $fvis $f: $ft, )*
        }
        const _: () = {
            $( $crate::__private::assert_shm_safe::<$ft>(); )*
            let mut _off = 0usize;
            $(
                assert!(::core::mem::offset_of!($t, $f) == _off, "padding between fields");
                _off += ::core::mem::size_of::<$ft>();
            )*
        };
        $crate::__private::const_assert_eq!(
            ::core::mem::size_of::<$t>(), 0 $(+ ::core::mem::size_of::<$ft>())*
        );
        // SAFETY: the struct is declared right here with `#[repr(C)]` and exactly these fields;
        // every one is `ShmSafe` (checked above); they lie back to back from offset 0 and their
        // sizes add up to the struct's size, so there is no padding. A struct of fields that
        // accept any bit pattern, without padding, accepts any bit pattern.
        #[allow(unsafe_code)]
        unsafe impl $crate::ShmSafe for $t {}
    };
}

/// Declares a `#[repr(C)]` struct of atomics and implements [`ShmAtomic`] for it, with the
/// checks of [`shm_safe!`](crate::shm_safe) (each field `ShmAtomic`, no padding) and one more:
/// every field is aligned for its type (so a packed representation is refused).
///
/// ```
/// use std::sync::atomic::{AtomicU32, AtomicU64};
/// use ipc_shm::shm_atomic;
///
/// shm_atomic! {
///     #[derive(Debug)]
///     pub struct Counters { pub hits: AtomicU64, pub misses: AtomicU32, pub flags: AtomicU32 }
/// }
/// ```
///
/// A plain field, a packed struct, or a struct declared elsewhere does not compile:
///
/// ```compile_fail,E0277
/// use std::sync::atomic::AtomicU32;
/// ipc_shm::shm_atomic! { struct Mixed { a: AtomicU32, plain: u32 } }
/// ```
/// ```compile_fail
/// use std::sync::atomic::{AtomicU32, AtomicU64};
/// ipc_shm::shm_atomic! { #[repr(packed)] struct Packed { a: AtomicU32, b: AtomicU64, c: AtomicU32 } }
/// ```
/// ```compile_fail
/// use std::sync::atomic::AtomicU32;
/// struct Elsewhere { a: AtomicU32 }
/// ipc_shm::shm_atomic!(Elsewhere { a: AtomicU32 });
/// ```
#[macro_export]
macro_rules! shm_atomic {
    (
        $(#[$attr:meta])*
        $vis:vis struct $t:ident {
            $( $(#[$fattr:meta])* $fvis:vis $f:ident : $ft:ty ),* $(,)?
        }
    ) => {
        #[repr(C)]
        $(#[$attr])*
        $vis struct $t {
            $( $(#[$fattr])* $fvis $f: $ft, )*
        }
        const _: () = {
            $( $crate::__private::assert_shm_atomic::<$ft>(); )*
            let mut _off = 0usize;
            $(
                assert!(::core::mem::offset_of!($t, $f) == _off, "padding between fields");
                assert!(_off % ::core::mem::align_of::<$ft>() == 0, "a field is not aligned");
                assert!(
                    ::core::mem::align_of::<$t>() >= ::core::mem::align_of::<$ft>(),
                    "a packed struct cannot hold atomics"
                );
                _off += ::core::mem::size_of::<$ft>();
            )*
        };
        $crate::__private::const_assert_eq!(
            ::core::mem::size_of::<$t>(), 0 $(+ ::core::mem::size_of::<$ft>())*
        );
        // SAFETY: the struct is declared right here with `#[repr(C)]` and exactly these fields;
        // every one is `ShmAtomic` (checked above), aligned for its type, and they lie back to
        // back from offset 0 with sizes adding up to the struct's: every byte is inside an
        // atomic.
        #[allow(unsafe_code)]
        unsafe impl $crate::ShmAtomic for $t {}
    };
}
