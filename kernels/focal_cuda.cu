// CUDA kernel of the fused sigmoid focal loss (forward + backward, one pass).
//
// The element formula is focal_element() of focal_math.h with CUDA's libm
// (expf, log1pf, logf: <= 2 ulp each, CUDA Programming Guide, Appendix
// "Mathematical Functions"). Grid-stride loop, one element per thread-step,
// float32 math; reductions are per-block (warp shuffles) then one block adds
// the partials in order, so the sum is deterministic.
//
// Build alone:  nvcc -O3 -arch=sm_90 -Xcompiler -fPIC -shared focal_cuda.cu -o libfocal_cuda.so
// NOT yet run on a GPU (see kernels/README.md).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "focal_cuda.h"
#include "focal_math.h"

namespace fusedfocal {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 4096;

struct CudaMath {
  static __device__ __forceinline__ float exp(float x) { return expf(x); }
  static __device__ __forceinline__ float log1p01(float t) { return log1pf(t); }
  static __device__ __forceinline__ float log(float d) { return logf(d); }
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0f;
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;  // valid in thread 0
}

template <class T, int A>
__global__ void __launch_bounds__(kThreads)
focal_kernel(const T* __restrict__ x, const float* __restrict__ y, const float* __restrict__ w,
             const float* __restrict__ alpha, int64_t classes, int64_t n, FocalParams p,
             float grad_scale, float* __restrict__ loss, T* __restrict__ grad,
             float* __restrict__ partial) {
  float acc = 0.0f;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float yv = __ldg(y + i);
    float l, g;
    focal_element<CudaMath>(to_float(x[i]), yv, p, &l, &g);
    if (A != 0) {
      const float a = A == 1 ? __ldg(alpha) : __ldg(alpha + i % classes);
      const float at = alpha_weight(a, yv, p);
      l *= at;
      g *= at;
    }
    if (w) {
      const float wv = __ldg(w + i);
      l *= wv;
      g *= wv;
    }
    if (loss && !partial) loss[i] = l;
    if (grad) grad[i] = from_float<T>(g * grad_scale);
    acc += l;
  }
  if (partial) {
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
  }
}

__global__ void __launch_bounds__(kThreads)
finish_sum(const float* __restrict__ partial, int blocks, double scale, float* __restrict__ out) {
  double acc = 0.0;  // fixed order per thread, then a fixed tree: deterministic
  for (int b = threadIdx.x; b < blocks; b += kThreads) acc += partial[b];
  __shared__ double s[kThreads];
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int k = kThreads / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = (float)(s[0] * scale);
}

int grid_for(int64_t n) {
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return blocks < 1 ? 1 : (int)blocks;
}

template <class T, int A>
int launch_typed(const FusedFocalCudaArgs& a, float* partial, cudaStream_t stream) {
  const FocalParams p = make_params(a.gamma, a.label_smoothing);
  const int grid = grid_for(a.n);
  const float scale = a.reduction == 2 && a.n > 0 ? (float)(1.0 / (double)a.n) : 1.0f;
  float* part = a.reduction == 0 ? nullptr : partial;
  if (a.n > 0) {
    focal_kernel<T, A><<<grid, kThreads, 0, stream>>>(
        static_cast<const T*>(a.logits), a.labels, a.weights, a.alpha, a.classes, a.n, p, scale,
        a.loss, static_cast<T*>(a.grad), part);
  }
  if (a.reduction != 0) {
    const double s = a.reduction == 2 ? (a.n > 0 ? 1.0 / (double)a.n : 0.0) : 1.0;
    finish_sum<<<1, kThreads, 0, stream>>>(partial, a.n > 0 ? grid : 0, s, a.loss);
  }
  return (int)cudaGetLastError();
}

template <class T>
int launch_alpha(const FusedFocalCudaArgs& a, float* partial, cudaStream_t stream) {
  switch (a.alpha_mode) {
    case 1: return launch_typed<T, 1>(a, partial, stream);
    case 2: return launch_typed<T, 2>(a, partial, stream);
    default: return launch_typed<T, 0>(a, partial, stream);
  }
}

}  // namespace
}  // namespace fusedfocal

extern "C" size_t fusedfocal_cuda_workspace_bytes(int64_t n) {
  return sizeof(float) * (size_t)fusedfocal::grid_for(n);
}

extern "C" int fusedfocal_cuda_forward_backward(const FusedFocalCudaArgs* args, void* workspace,
                                                size_t workspace_bytes, void* stream) {
  using namespace fusedfocal;
  if (args->reduction != 0 && workspace_bytes < fusedfocal_cuda_workspace_bytes(args->n)) {
    return (int)cudaErrorInvalidValue;
  }
  float* partial = static_cast<float*>(workspace);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (args->dtype) {
    case 1: return launch_alpha<__half>(*args, partial, s);
    case 2: return launch_alpha<__nv_bfloat16>(*args, partial, s);
    default: return launch_alpha<float>(*args, partial, s);
  }
}

extern "C" const char* fusedfocal_cuda_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}
