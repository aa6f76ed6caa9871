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
// The same vector at any float's address (and allowed to alias floats).
typedef float UnalignedVec __attribute__((vector_size(kLanes * 4), aligned(4), may_alias));

// Vector loads and stores as plain assignments, not std::memcpy: GCC turned a block's
// memcpy loads of 3 or 4 consecutive vectors into one copy through the stack, and then
// kept the block's accumulators on the stack too (AVX2: ~4x slower).
inline Vec LoadVec(const float* p) { return *reinterpret_cast<const UnalignedVec*>(p); }
inline void StoreVec(float* p, Vec v) { *reinterpret_cast<UnalignedVec*>(p) = v; }

}  // namespace redconv

#endif  // REDCONV_VECTOR_H_
