// The vector register every compiled kernel here computes with: kLanes floats.
#ifndef REDCONV_VECTOR_H_
#define REDCONV_VECTOR_H_

namespace redconv {

#if defined(__AVX512F__)
constexpr int kLanes = 16;  // floats per vector register
#else
constexpr int kLanes = 8;  // AVX2 (NEON pairs)
#endif
typedef float Vec __attribute__((vector_size(kLanes * 4)));

}  // namespace redconv

#endif  // REDCONV_VECTOR_H_
