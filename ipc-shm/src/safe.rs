//! Which types may live in shared memory: [`ShmSafe`] (copied in and out) and [`ShmAtomic`]
//! (borrowed in place, because all their state is atomic).

pub use crate::sys::{ShmAtomic, ShmSafe};

#[doc(hidden)]
pub mod __private {
    pub use static_assertions::const_assert_eq;
    pub const fn assert_shm_safe<T: super::ShmSafe>() {}
    pub const fn assert_shm_atomic<T: super::ShmAtomic>() {}
}

/// Implements [`ShmSafe`] for your `#[repr(C)]` struct after checking, at compile time, that
/// every field is `ShmSafe`, that the fields listed are all of them, in declaration order, and
/// that the struct's size is the sum of its fields' sizes (no padding).
///
/// ```
/// use ipc_shm::{shm_safe, ShmSafe};
///
/// #[repr(C)]
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// struct Sample { seq: u64, value: f32, flags: u32 }
/// shm_safe!(Sample { seq: u64, value: f32, flags: u32 });
/// ```
///
/// A struct with padding, or with a field that is not `ShmSafe`, does not compile:
///
/// ```compile_fail
/// use ipc_shm::shm_safe;
/// #[repr(C)] #[derive(Clone, Copy)]
/// struct Padded { a: u8, b: u64 }
/// shm_safe!(Padded { a: u8, b: u64 });
/// ```
/// ```compile_fail
/// use ipc_shm::shm_safe;
/// #[repr(C)] #[derive(Clone, Copy)]
/// struct HasBool { ok: bool, pad: [u8; 3], n: u32 }
/// shm_safe!(HasBool { ok: bool, pad: [u8; 3], n: u32 });
/// ```
#[macro_export]
macro_rules! shm_safe {
    ($t:ident { $($f:ident : $ft:ty),* $(,)? }) => {
        const _: () = {
            $( $crate::__private::assert_shm_safe::<$ft>(); )*
            let mut _off = 0usize;
            $(
                assert!(::core::mem::offset_of!($t, $f) == _off, "fields out of order or padded");
                _off += ::core::mem::size_of::<$ft>();
            )*
        };
        $crate::__private::const_assert_eq!(
            ::core::mem::size_of::<$t>(), 0 $(+ ::core::mem::size_of::<$ft>())*
        );
        const _: fn(&$t) = |v: &$t| { let $t { $($f: _),* } = *v; };
        // SAFETY: checked above: every field is `ShmSafe`, all fields are listed, in order, and
        // their sizes add up to the struct's size, so there is no padding.
        #[allow(unsafe_code)]
        unsafe impl $crate::ShmSafe for $t {}
    };
}

/// Implements [`ShmAtomic`] for your `#[repr(C)]` struct of atomics, with the same compile-time
/// checks as [`shm_safe!`](crate::shm_safe).
///
/// ```
/// use std::sync::atomic::{AtomicU32, AtomicU64};
/// use ipc_shm::shm_atomic;
///
/// #[repr(C)]
/// #[derive(Debug)]
/// struct Counters { hits: AtomicU64, misses: AtomicU32, flags: AtomicU32 }
/// shm_atomic!(Counters { hits: AtomicU64, misses: AtomicU32, flags: AtomicU32 });
/// ```
///
/// ```compile_fail
/// use std::sync::atomic::AtomicU32;
/// use ipc_shm::shm_atomic;
/// #[repr(C)]
/// struct Mixed { a: AtomicU32, plain: u32 }
/// shm_atomic!(Mixed { a: AtomicU32, plain: u32 });
/// ```
#[macro_export]
macro_rules! shm_atomic {
    ($t:ident { $($f:ident : $ft:ty),* $(,)? }) => {
        const _: () = {
            $( $crate::__private::assert_shm_atomic::<$ft>(); )*
            let mut _off = 0usize;
            $(
                assert!(::core::mem::offset_of!($t, $f) == _off, "fields out of order or padded");
                _off += ::core::mem::size_of::<$ft>();
            )*
        };
        $crate::__private::const_assert_eq!(
            ::core::mem::size_of::<$t>(), 0 $(+ ::core::mem::size_of::<$ft>())*
        );
        const _: fn(&$t) = |v: &$t| { let $t { $($f: _),* } = v; };
        // SAFETY: checked above: every field is `ShmAtomic`, all fields are listed, in order,
        // and their sizes add up to the struct's size, so every byte is inside an atomic.
        #[allow(unsafe_code)]
        unsafe impl $crate::ShmAtomic for $t {}
    };
}
