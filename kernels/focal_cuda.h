// Plain C entry point of the CUDA kernel (focal_cuda.cu).
//
// Usable without TensorFlow: benchmarks/gpu/gpu_check_cuda.py builds focal_cuda.cu
// alone with nvcc into a shared library and calls it through ctypes.
#ifndef FUSEDFOCAL_KERNELS_FOCAL_CUDA_H_
#define FUSEDFOCAL_KERNELS_FOCAL_CUDA_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct FusedFocalCudaArgs {
  int32_t dtype;          // 0 float32, 1 float16, 2 bfloat16 (logits and grad)
  int64_t n;              // number of elements
  int64_t classes;        // C, the last dimension (alpha index = i % C)
  const void* logits;     // device [n]
  const float* labels;    // device [n]
  const float* weights;   // device [n] per-element weights, or NULL
  int32_t alpha_mode;     // 0 none, 1 scalar (alpha[0]), 2 per class (alpha[C])
  const float* alpha;     // device
  float gamma;            // >= 0
  float label_smoothing;  // in [0, 1)
  int32_t reduction;      // 0 none, 1 sum, 2 mean
  float* loss;            // device: [n] for none, [1] for sum/mean
  void* grad;             // device [n] of dtype, or NULL
} FusedFocalCudaArgs;

// Bytes of scratch memory fusedfocal_cuda_forward_backward needs for n elements.
size_t fusedfocal_cuda_workspace_bytes(int64_t n);

// Enqueues the kernel(s) on `stream` (a cudaStream_t; NULL = default stream).
// Returns 0 or a cudaError_t value. Deterministic: per-block partial sums are
// added in a fixed order by a second kernel (no atomics).
int fusedfocal_cuda_forward_backward(const FusedFocalCudaArgs* args, void* workspace,
                                     size_t workspace_bytes, void* stream);

const char* fusedfocal_cuda_error_string(int code);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // FUSEDFOCAL_KERNELS_FOCAL_CUDA_H_
