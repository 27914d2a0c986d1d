//! Which types may live in shared memory: [`ShmSafe`] (copied in and out) and [`ShmAtomic`]
//! (borrowed in place, because all their state is atomic).

pub use crate::sys::{ShmAtomic, ShmSafe};

#[doc(hidden)]
pub mod __private {
    pub use static_assertions::const_assert_eq;
    pub const fn assert_shm_safe<T: super::ShmSafe>() {}
    pub const fn assert_shm_atomic<T: super::ShmAtomic>() {}
    /// The type of the place `p` points to, as a value that does not coerce: the macros compare
    /// it with the type the caller listed, so a field cannot be declared as something it is not.
    pub const fn field_type<T>(_: *const T) -> ::core::marker::PhantomData<T> {
        ::core::marker::PhantomData
    }
}

/// Implements [`ShmSafe`] for your `#[repr(C)]` struct after checking, at compile time, that
/// the fields listed are all of them, each with its declared type, that every one is
/// `ShmSafe`, that they lie back to back in the order listed, and that the struct's size is
/// the sum of their sizes (no padding).
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
/// ```compile_fail,E0277
/// use ipc_shm::shm_safe;
/// #[repr(C)] #[derive(Clone, Copy)]
/// struct HasBool { ok: bool, pad: [u8; 3], n: u32 }
/// shm_safe!(HasBool { ok: bool, pad: [u8; 3], n: u32 });
/// ```
///
/// Nor does listing a field under a type it does not have (here a `bool` passed off as a `u8`,
/// or a `Box` as a `u64`):
///
/// ```compile_fail,E0308
/// use ipc_shm::shm_safe;
/// #[repr(C)] #[derive(Clone, Copy)]
/// struct Lie { ok: bool, pad: [u8; 3], n: u32 }
/// shm_safe!(Lie { ok: u8, pad: [u8; 3], n: u32 });
/// ```
/// ```compile_fail,E0308
/// use ipc_shm::shm_safe;
/// #[repr(C)]
/// struct Boxed { p: Box<u64> }
/// shm_safe!(Boxed { p: u64 });
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
        const _: fn(&$t) = |v: &$t| {
            // Every field is listed (a struct pattern without `..`)...
            let $t { $($f: _),* } = v;
            // ...with the type it is declared with (raw pointers: also fine for packed
            // structs; `PhantomData<T>` never coerces, so the types must be equal).
            $( let _: ::core::marker::PhantomData<$ft> =
                $crate::__private::field_type(::core::ptr::addr_of!((*v).$f)); )*
        };
        // SAFETY: checked above: the fields listed are all of the struct's fields, with their
        // declared types; every one is `ShmSafe`; they lie back to back from offset 0 and their
        // sizes add up to the struct's size, so there is no padding. A struct of fields that
        // accept any bit pattern, without padding, accepts any bit pattern.
        #[allow(unsafe_code)]
        unsafe impl $crate::ShmSafe for $t {}
    };
}

/// Implements [`ShmAtomic`] for your `#[repr(C)]` struct of atomics, with the same compile-time
/// checks as [`shm_safe!`](crate::shm_safe): all fields, their declared types, each one
/// `ShmAtomic`, no padding.
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
/// A plain field, whether listed as what it is or passed off as an atomic, does not compile:
///
/// ```compile_fail,E0277
/// use std::sync::atomic::AtomicU32;
/// use ipc_shm::shm_atomic;
/// #[repr(C)]
/// struct Mixed { a: AtomicU32, plain: u32 }
/// shm_atomic!(Mixed { a: AtomicU32, plain: u32 });
/// ```
/// ```compile_fail,E0308
/// use std::sync::atomic::AtomicU32;
/// use ipc_shm::shm_atomic;
/// #[repr(C)]
/// struct Mixed { a: AtomicU32, plain: u32 }
/// shm_atomic!(Mixed { a: AtomicU32, plain: AtomicU32 });
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
        const _: fn(&$t) = |v: &$t| {
            let $t { $($f: _),* } = v;
            $( let _: ::core::marker::PhantomData<$ft> =
                $crate::__private::field_type(::core::ptr::addr_of!((*v).$f)); )*
        };
        // SAFETY: checked above: the fields listed are all of the struct's fields, with their
        // declared types; every one is `ShmAtomic`; they lie back to back from offset 0 and
        // their sizes add up to the struct's size, so every byte is inside an atomic.
        #[allow(unsafe_code)]
        unsafe impl $crate::ShmAtomic for $t {}
    };
}
