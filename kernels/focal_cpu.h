// Plain C interface of the CPU compute library (no TensorFlow types).
//
// focal_cpu.cc is compiled once per instruction set; each copy exports one
// `fusedfocal_cpu_<isa>` function with this signature. The TensorFlow kernel
// (fused_focal_kernel.cc) picks one at run time and shards calls to it over
// the intra-op thread pool.
#ifndef FUSEDFOCAL_KERNELS_FOCAL_CPU_H_
#define FUSEDFOCAL_KERNELS_FOCAL_CPU_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum FusedFocalDtype { FF_FLOAT32 = 0, FF_FLOAT16 = 1, FF_BFLOAT16 = 2 };
enum FusedFocalAlpha { FF_ALPHA_NONE = 0, FF_ALPHA_SCALAR = 1, FF_ALPHA_VECTOR = 2 };

typedef struct FusedFocalCpuArgs {
  int32_t dtype;            // FusedFocalDtype of `logits` and `grad`
  const void* logits;       // [n] elements of `dtype`
  const float* labels;      // [n] float32
  const float* weights;     // [n] float32 per-element weights, or NULL
  int32_t alpha_mode;       // FusedFocalAlpha
  float alpha;              // FF_ALPHA_SCALAR
  const float* alpha_tiled; // FF_ALPHA_VECTOR: alpha[k % C] for k < alpha_period
  int64_t alpha_period;     // a multiple of C; ranges must start at multiples of C
  float gamma;              // >= 0
  float label_smoothing;    // in [0, 1)
  float grad_scale;         // multiplies grad before rounding (1/n for "mean")
  float* loss;              // [n] float32 element losses, or NULL (reduced)
  void* grad;               // [n] elements of `dtype`, or NULL
} FusedFocalCpuArgs;

// Computes elements [begin, end) and returns the sum of their losses (float32
// lanes, combined in double). Deterministic for a given (begin, end).
typedef double (*FusedFocalCpuFn)(const FusedFocalCpuArgs* args, int64_t begin, int64_t end);

double fusedfocal_cpu_sse2(const FusedFocalCpuArgs* args, int64_t begin, int64_t end);
double fusedfocal_cpu_avx2(const FusedFocalCpuArgs* args, int64_t begin, int64_t end);
double fusedfocal_cpu_avx512(const FusedFocalCpuArgs* args, int64_t begin, int64_t end);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // FUSEDFOCAL_KERNELS_FOCAL_CPU_H_
