// CPU compute library: one copy per instruction set.
//
// Compiled three times by scripts/build_kernels.py, with
//   -DFF_EXPORT_NAME=fusedfocal_cpu_sse2   -DFF_VEC_WIDTH=8   (x86-64 baseline)
//   -DFF_EXPORT_NAME=fusedfocal_cpu_avx2   -DFF_VEC_WIDTH=8   -march=x86-64-v3
//   -DFF_EXPORT_NAME=fusedfocal_cpu_avx512 -DFF_VEC_WIDTH=16  -march=x86-64-v4
// This file includes no TensorFlow, Eigen or standard-library template, and
// everything it defines besides the entry point has internal linkage, so no
// function compiled for a wider instruction set can be picked by the linker
// for code that runs on a narrower CPU.
#include "focal_simd.h"

#ifndef FF_EXPORT_NAME
#error "define FF_EXPORT_NAME (see scripts/build_kernels.py)"
#endif

extern "C" __attribute__((visibility("default"))) double FF_EXPORT_NAME(
    const FusedFocalCpuArgs* args, int64_t begin, int64_t end) {
  return fusedfocal::focal_range_any(args, begin, end);
}
