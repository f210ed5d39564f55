// Keeps _fused_focal_ops.so within TensorFlow's own wheel policy
// (manylinux_2_27: glibc <= 2.27, libstdc++ symbol versions <= GLIBCXX_3.4.24)
// when it is compiled with a newer GCC (12 on Debian 12 gives GLIBC_2.32 and
// GLIBCXX_3.4.29/3.4.30). Linked into the library by
// build_support/native_build.py; `auditwheel show` checks the result, and
// docs/release.md says why. Three symbols reach past that policy, each from
// inline code in libstdc++'s headers, and each gets a hidden local definition
// here, so the library imports none of them:
//
//  * __libc_single_threaded (GLIBC_2.32), read by <ext/atomicity.h> to skip
//    atomic reference counting in a single-threaded process. Here it is a
//    constant 0 ("maybe threaded"): the inline code always uses the atomic
//    path, which is what GCC before 11 did. TensorFlow processes are threaded
//    anyway.
//  * std::__throw_bad_array_new_length() (GLIBCXX_3.4.29), called by
//    std::allocator in GCC >= 11 headers: forwards to
//    __cxa_throw_bad_array_new_length (CXXABI_1.3.8), the same exception.
//  * std::condition_variable::wait(unique_lock<mutex>&) (GLIBCXX_3.4.30: GCC 12
//    gave it a new version when it dropped noexcept): forwards to the
//    GLIBCXX_3.4.11 version of the same function, which every libstdc++ since
//    GCC 4.4 exports, GCC 12's included.
//
// Nothing here is exported (hidden visibility), so TensorFlow and other
// libraries keep resolving these names to libstdc++ and glibc.

#if defined(__linux__)
#include <features.h>  // defines __GLIBC__ on glibc (not on musl)
#endif
#if defined(__linux__) && defined(__GLIBC__)

extern "C" {

__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;

[[noreturn]] void __cxa_throw_bad_array_new_length();

[[noreturn]] __attribute__((visibility("hidden"))) void fusedfocal_throw_bad_array_new_length()
    __asm__("_ZSt28__throw_bad_array_new_lengthv");
void fusedfocal_throw_bad_array_new_length() { __cxa_throw_bad_array_new_length(); }

// A reference to fusedfocal_cv_wait_3_4_11 is a reference to
// condition_variable::wait@GLIBCXX_3.4.11 in libstdc++.so.6.
__asm__(".symver fusedfocal_cv_wait_3_4_11,_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@GLIBCXX_3.4.11");
void fusedfocal_cv_wait_3_4_11(void* cv, void* lock);

__attribute__((visibility("hidden"))) void fusedfocal_cv_wait(void* cv, void* lock)
    __asm__("_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE");
void fusedfocal_cv_wait(void* cv, void* lock) { fusedfocal_cv_wait_3_4_11(cv, lock); }

}  // extern "C"

#endif
