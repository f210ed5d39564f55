// The CPU driver both front ends share: the TensorFlow OpKernel
// (fused_focal_kernel.cc, TF's intra-op pool) and the XLA FFI handler
// (focal_ffi_cpu.cc, XLA's intra-op pool).
//
// It picks the compute library for the widest instruction set this CPU
// supports, cuts the flattened tensor into fixed blocks, tiles a per-class
// alpha over one block, and adds the block partial sums in order (double),
// so results depend neither on the front end nor on the number of threads.
// Header only, standard library only: it must compile next to TensorFlow's
// headers and next to xla/ffi/api/ffi.h alike.
#ifndef FUSEDFOCAL_KERNELS_FOCAL_CPU_DRIVER_H_
#define FUSEDFOCAL_KERNELS_FOCAL_CPU_DRIVER_H_

#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "focal_cpu.h"

namespace fusedfocal {

constexpr int64_t kCpuBlock = 16384;  // elements per shard unit (64 KiB of float32)

enum Reduction { kReduceNone = 0, kReduceSum = 1, kReduceMean = 2 };

// The widest supported instruction set, lowered by FUSEDFOCAL_CPU_ISA
// (avx512 | avx2 | sse2), which tests use to cover every variant.
inline FusedFocalCpuFn SelectCpuFn() {
  __builtin_cpu_init();
  int level = 0;
  if (__builtin_cpu_supports("x86-64-v3")) level = 1;
  if (__builtin_cpu_supports("x86-64-v4")) level = 2;
  if (const char* env = getenv("FUSEDFOCAL_CPU_ISA")) {
    if (strcmp(env, "sse2") == 0) level = 0;
    else if (strcmp(env, "avx2") == 0) level = std::min(level, 1);
  }
  return level == 2 ? fusedfocal_cpu_avx512 : level == 1 ? fusedfocal_cpu_avx2 : fusedfocal_cpu_sse2;
}

// One call: the arguments of the compute library plus its block plan.
class CpuPlan {
 public:
  // `alpha` has `alpha_count` entries (0: none, 1: scalar, else C).
  // `loss_elements` is NULL for a reduced loss; `grad` may be NULL (no gradient).
  CpuPlan(int dtype, const void* logits, const float* labels, const float* weights,
          const float* alpha, int64_t alpha_count, int64_t n, int64_t classes, float gamma,
          float label_smoothing, int reduction, float* loss_elements, void* grad)
      : n_(n), reduction_(reduction), fn_(SelectCpuFn()) {
    memset(&args_, 0, sizeof(args_));
    args_.dtype = dtype;
    args_.logits = logits;
    args_.labels = labels;
    args_.weights = weights;
    args_.gamma = gamma;
    args_.label_smoothing = label_smoothing;
    args_.grad_scale =
        reduction == kReduceMean && n > 0 ? static_cast<float>(1.0 / static_cast<double>(n)) : 1.0f;
    args_.loss = reduction == kReduceNone ? loss_elements : nullptr;
    args_.grad = grad;
    args_.alpha_mode = alpha_count == 0 ? FF_ALPHA_NONE : alpha_count == 1 ? FF_ALPHA_SCALAR
                                                                          : FF_ALPHA_VECTOR;
    // Blocks start at multiples of C, so a per-class alpha tiled over one
    // block lines up with every block.
    block_ = kCpuBlock;
    if (args_.alpha_mode == FF_ALPHA_SCALAR) {
      args_.alpha = alpha[0];
    } else if (args_.alpha_mode == FF_ALPHA_VECTOR) {
      block_ = std::max<int64_t>(1, kCpuBlock / classes) * classes;
      if (block_ == classes) {
        args_.alpha_tiled = alpha;
      } else {
        tiled_.resize(block_);
        for (int64_t k = 0; k < block_; ++k) tiled_[k] = alpha[k % classes];
        args_.alpha_tiled = tiled_.data();
      }
      args_.alpha_period = block_;
    }
    blocks_ = n == 0 ? 0 : (n + block_ - 1) / block_;
    partial_.assign(blocks_, 0.0);
  }

  int64_t blocks() const { return blocks_; }
  // Work units of one block, for a thread pool's cost model (cycles):
  // about 30 per element (exp, log1p, a division, fp16 conversion), 50 with
  // a fractional gamma (one more exp and log).
  int64_t block_cost() const {
    return block_ * (args_.gamma == static_cast<float>(static_cast<int>(args_.gamma)) ? 30 : 50);
  }

  // Computes blocks [b0, b1); safe to call from several threads on disjoint ranges.
  void Run(int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      partial_[b] = fn_(&args_, b * block_, std::min(n_, (b + 1) * block_));
    }
  }

  // The reduced loss (sum, or mean with mean of nothing = 0), once every block ran.
  float Total() const {
    double total = 0.0;
    for (double p : partial_) total += p;
    if (reduction_ == kReduceMean) total = n_ > 0 ? total / static_cast<double>(n_) : 0.0;
    return static_cast<float>(total);
  }

 private:
  FusedFocalCpuArgs args_;
  int64_t n_;
  int reduction_;
  FusedFocalCpuFn fn_;
  int64_t block_ = kCpuBlock;
  int64_t blocks_ = 0;
  std::vector<float> tiled_;
  std::vector<double> partial_;
};

}  // namespace fusedfocal

#endif  // FUSEDFOCAL_KERNELS_FOCAL_CPU_DRIVER_H_
