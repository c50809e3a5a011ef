// The engine's native CPU ops (see serving/engine/kernels.py).
//
// paged_decode_attention: decode attention that reads the paged KV pool in place, through each
// sequence's block table.
//
// One query token per sequence (decode). Three versions of each (sequence, KV head) task: AVX-512
// (head sizes 64 and 128), AVX2 with FMA (head sizes 32 to 128 in steps of 8, on CPUs without
// AVX-512 and for the head sizes it lacks) and a portable loop for the rest. Work is split over (sequence, KV head) pairs; the
// query heads that share a KV head (grouped-query attention) are handled together, so every K
// and V row is read once per step. Scores are kept for the whole context (two passes: scores
// and max, then exp-sum and the V accumulation), which for decode is a few KB per task.
//
// rope_and_cache: rotary embedding of Q and K fused with the K/V write into the pool.
//
// Registered as torch.ops.switchyard.*; serving/engine/kernels.py builds and loads them, and
// the model falls back to plain torch ops when they cannot be built.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

#if defined(__AVX512F__)
template <typename kv_t>
inline __m512 load16(const kv_t* p);
template <>
inline __m512 load16<float>(const float* p) { return _mm512_loadu_ps(p); }
template <>
inline __m512 load16<c10::BFloat16>(const c10::BFloat16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
template <>
inline __m512 load16<c10::Half>(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// exp(x) for x <= 0 (scores minus their max): 2^n * p(r), r in [-ln2/2, ln2/2], degree-6
// polynomial; relative error about 2e-7, underflows cleanly to 0.
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// One (sequence, KV head) task with AVX-512 for a group of G query heads and head_dim 16*NV,
// both compile-time so queries and accumulators live in registers: the group's query heads
// against every K row, then softmax, then the V rows weighted into the accumulators.
template <typename kv_t, int G, int NV>
void decode_task_avx512(const float* qb, const kv_t* k_pool, const kv_t* v_pool,
                        const int32_t* table, int64_t L, int64_t h, int64_t block_size,
                        int64_t slot_stride, float scale, float* scores, float* ob) {
  constexpr int64_t D = 16 * NV;
  __m512 qv[G][NV];
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < NV; ++i)
      qv[g][i] = _mm512_mul_ps(_mm512_loadu_ps(qb + g * D + i * 16), _mm512_set1_ps(scale));
  for (int64_t start = 0; start < L; start += block_size) {
    const int64_t n = std::min(block_size, L - start);
    const kv_t* kb = k_pool + static_cast<int64_t>(table[start / block_size]) * block_size * slot_stride + h * D;
    for (int64_t j = 0; j < n; ++j) {
      const kv_t* k = kb + j * slot_stride;
      __m512 kv[NV];
      for (int i = 0; i < NV; ++i) kv[i] = load16<kv_t>(k + i * 16);
      for (int g = 0; g < G; ++g) {
        __m512 s = _mm512_mul_ps(qv[g][0], kv[0]);
        for (int i = 1; i < NV; ++i) s = _mm512_fmadd_ps(qv[g][i], kv[i], s);
        scores[g * L + start + j] = _mm512_reduce_add_ps(s);
      }
    }
  }
  float inv[G];
  for (int g = 0; g < G; ++g) {
    float* sg = scores + g * L;
    __m512 mv = _mm512_set1_ps(-INFINITY);
    int64_t t = 0;
    for (; t + 16 <= L; t += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(sg + t));
    float m = _mm512_reduce_max_ps(mv);
    for (; t < L; ++t) m = std::max(m, sg[t]);
    mv = _mm512_set1_ps(m);
    __m512 total = _mm512_setzero_ps();
    t = 0;
    for (; t + 16 <= L; t += 16) {
      const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(sg + t), mv));
      _mm512_storeu_ps(sg + t, e);
      total = _mm512_add_ps(total, e);
    }
    if (t < L) {
      const __mmask16 mask = static_cast<__mmask16>((1u << (L - t)) - 1u);
      const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, sg + t), mv));
      _mm512_mask_storeu_ps(sg + t, mask, e);
      total = _mm512_add_ps(total, _mm512_maskz_mov_ps(mask, e));
    }
    inv[g] = 1.f / _mm512_reduce_add_ps(total);
  }
  __m512 acc[G][NV];
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < NV; ++i) acc[g][i] = _mm512_setzero_ps();
  for (int64_t start = 0; start < L; start += block_size) {
    const int64_t n = std::min(block_size, L - start);
    const kv_t* vb = v_pool + static_cast<int64_t>(table[start / block_size]) * block_size * slot_stride + h * D;
    for (int64_t j = 0; j < n; ++j) {
      const kv_t* v = vb + j * slot_stride;
      __m512 vv[NV];
      for (int i = 0; i < NV; ++i) vv[i] = load16<kv_t>(v + i * 16);
      for (int g = 0; g < G; ++g) {
        const __m512 p = _mm512_set1_ps(scores[g * L + start + j]);
        for (int i = 0; i < NV; ++i) acc[g][i] = _mm512_fmadd_ps(p, vv[i], acc[g][i]);
      }
    }
  }
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < NV; ++i)
      _mm512_storeu_ps(ob + g * D + i * 16, _mm512_mul_ps(acc[g][i], _mm512_set1_ps(inv[g])));
}

using TaskFn = void (*)(const float*, const void*, const void*, const int32_t*, int64_t, int64_t,
                        int64_t, int64_t, float, float*, float*);

template <typename kv_t, int G, int NV>
void task_entry(const float* qb, const void* k, const void* v, const int32_t* table, int64_t L,
                int64_t h, int64_t block_size, int64_t slot_stride, float scale, float* scores,
                float* ob) {
  decode_task_avx512<kv_t, G, NV>(qb, static_cast<const kv_t*>(k), static_cast<const kv_t*>(v),
                                  table, L, h, block_size, slot_stride, scale, scores, ob);
}

// The specialised task for (group, head_dim), or nullptr: groups 1-8, head_dim 64 or 128.
template <typename kv_t>
TaskFn pick_task(int64_t group, int64_t head_dim) {
#define SY_CASE(G)                                                             \
  case G:                                                                      \
    return head_dim == 64 ? &task_entry<kv_t, G, 4>                            \
                          : (head_dim == 128 ? &task_entry<kv_t, G, 8> : nullptr);
  switch (group) {
    SY_CASE(1) SY_CASE(2) SY_CASE(3) SY_CASE(4) SY_CASE(5) SY_CASE(6) SY_CASE(7) SY_CASE(8)
    default:
      return nullptr;
  }
#undef SY_CASE
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
// The same task with AVX2 and FMA (8 lanes), for CPUs without AVX-512: head_dim = 8*NV with
// NV compile-time, any group size. One K row at a time sits in registers while each of the
// group's query heads (pre-scaled, in L1) is dotted with it; the V pass runs once per query
// head with that head's accumulators in registers (V rows come back from L1/L2).
template <typename kv_t>
inline __m256 load8(const kv_t* p);
template <>
inline __m256 load8<float>(const float* p) { return _mm256_loadu_ps(p); }
template <>
inline __m256 load8<c10::BFloat16>(const c10::BFloat16* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}
#if defined(__F16C__)
template <>
inline __m256 load8<c10::Half>(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#endif

inline float hsum8(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 0x55));
  return _mm_cvtss_f32(x);
}

inline float hmax8(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 0x55));
  return _mm_cvtss_f32(x);
}

// exp(x) for x <= 0, as exp16 above: 2^n * p(r), the power of two built in the exponent bits.
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

template <typename kv_t, int NV>
void decode_task_avx2(const float* qb, const kv_t* k_pool, const kv_t* v_pool,
                      const int32_t* table, int64_t L, int64_t h, int64_t group,
                      int64_t block_size, int64_t slot_stride, float scale, float* scores,
                      float* ob) {
  constexpr int64_t D = 8 * NV;
  float qs[8 * D];  // the group's query heads, scaled (group <= 8)
  for (int64_t i = 0; i < group * D; ++i) qs[i] = qb[i] * scale;
  for (int64_t start = 0; start < L; start += block_size) {
    const int64_t n = std::min(block_size, L - start);
    const kv_t* kb = k_pool + static_cast<int64_t>(table[start / block_size]) * block_size * slot_stride + h * D;
    for (int64_t j = 0; j < n; ++j) {
      const kv_t* k = kb + j * slot_stride;
      __m256 kv[NV];
      for (int i = 0; i < NV; ++i) kv[i] = load8<kv_t>(k + i * 8);
      for (int64_t g = 0; g < group; ++g) {
        const float* q = qs + g * D;
        __m256 s = _mm256_mul_ps(_mm256_loadu_ps(q), kv[0]);
        for (int i = 1; i < NV; ++i) s = _mm256_fmadd_ps(_mm256_loadu_ps(q + i * 8), kv[i], s);
        scores[g * L + start + j] = hsum8(s);
      }
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float* sg = scores + g * L;
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int64_t t = 0;
    for (; t + 8 <= L; t += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(sg + t));
    float m = hmax8(mv);
    for (; t < L; ++t) m = std::max(m, sg[t]);
    mv = _mm256_set1_ps(m);
    __m256 total = _mm256_setzero_ps();
    t = 0;
    for (; t + 8 <= L; t += 8) {
      const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sg + t), mv));
      _mm256_storeu_ps(sg + t, e);
      total = _mm256_add_ps(total, e);
    }
    float sum = hsum8(total);
    for (; t < L; ++t) {
      sg[t] = std::exp(sg[t] - m);
      sum += sg[t];
    }
    __m256 acc[NV];
    for (int i = 0; i < NV; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t start = 0; start < L; start += block_size) {
      const int64_t n = std::min(block_size, L - start);
      const kv_t* vb = v_pool + static_cast<int64_t>(table[start / block_size]) * block_size * slot_stride + h * D;
      for (int64_t j = 0; j < n; ++j) {
        const kv_t* v = vb + j * slot_stride;
        const __m256 p = _mm256_set1_ps(sg[start + j]);
        for (int i = 0; i < NV; ++i) acc[i] = _mm256_fmadd_ps(p, load8<kv_t>(v + i * 8), acc[i]);
      }
    }
    const __m256 inv = _mm256_set1_ps(1.f / sum);
    for (int i = 0; i < NV; ++i) _mm256_storeu_ps(ob + g * D + i * 8, _mm256_mul_ps(acc[i], inv));
  }
}

using Avx2TaskFn = void (*)(const float*, const void*, const void*, const int32_t*, int64_t,
                            int64_t, int64_t, int64_t, int64_t, float, float*, float*);

template <typename kv_t, int NV>
void avx2_entry(const float* qb, const void* k, const void* v, const int32_t* table, int64_t L,
                int64_t h, int64_t group, int64_t block_size, int64_t slot_stride, float scale,
                float* scores, float* ob) {
  decode_task_avx2<kv_t, NV>(qb, static_cast<const kv_t*>(k), static_cast<const kv_t*>(v), table,
                             L, h, group, block_size, slot_stride, scale, scores, ob);
}

// The AVX2 task for head_dim 32, 40, 64, 80, 96 or 128 and groups of up to 8, or nullptr.
template <typename kv_t>
Avx2TaskFn pick_avx2_task(int64_t group, int64_t head_dim) {
  if (group < 1 || group > 8) return nullptr;
  switch (head_dim) {
    case 32: return &avx2_entry<kv_t, 4>;
    case 40: return &avx2_entry<kv_t, 5>;
    case 64: return &avx2_entry<kv_t, 8>;
    case 80: return &avx2_entry<kv_t, 10>;
    case 96: return &avx2_entry<kv_t, 12>;
    case 128: return &avx2_entry<kv_t, 16>;
    default: return nullptr;
  }
}
#if !defined(__F16C__)
template <>
Avx2TaskFn pick_avx2_task<c10::Half>(int64_t, int64_t) { return nullptr; }
#endif
#endif

// Portable version of the same task (any head_dim, any group size).
template <typename kv_t>
void decode_task_scalar(const float* qb, const kv_t* k_pool, const kv_t* v_pool,
                        const int32_t* table, int64_t L, int64_t h, int64_t group, int64_t D,
                        int64_t block_size, int64_t slot_stride, float scale, float* scores,
                        float* ob) {
  for (int64_t g = 0; g < group; ++g) {
    float* sg = scores + g * L;
    float m = -INFINITY;
    for (int64_t t = 0; t < L; ++t) {
      const kv_t* k = k_pool + (static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size) * slot_stride + h * D;
      float s = 0.f;
      for (int64_t d = 0; d < D; ++d) s += qb[g * D + d] * static_cast<float>(k[d]);
      sg[t] = s * scale;
      m = std::max(m, sg[t]);
    }
    float total = 0.f;
    for (int64_t t = 0; t < L; ++t) {
      sg[t] = std::exp(sg[t] - m);
      total += sg[t];
    }
    float* og = ob + g * D;
    std::fill(og, og + D, 0.f);
    for (int64_t t = 0; t < L; ++t) {
      const kv_t* v = v_pool + (static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size) * slot_stride + h * D;
      for (int64_t d = 0; d < D; ++d) og[d] += sg[t] * static_cast<float>(v[d]);
    }
    for (int64_t d = 0; d < D; ++d) og[d] /= total;
  }
}

template <typename kv_t>
void decode_kernel(const float* q, const kv_t* k_pool, const kv_t* v_pool, const int32_t* tables,
                   const int32_t* lens, float* out, int64_t batch, int64_t n_heads,
                   int64_t n_kv_heads, int64_t head_dim, int64_t max_blocks, int64_t block_size,
                   int64_t slot_stride, float scale) {
  const int64_t group = n_heads / n_kv_heads;
  const int64_t D = head_dim;
#if defined(__AVX512F__)
  const TaskFn fast = pick_task<kv_t>(group, D);
#endif
#if defined(__AVX2__) && defined(__FMA__)
  const Avx2TaskFn fast2 = pick_avx2_task<kv_t>(group, D);
#endif
  // Tasks are (sequence, KV head) pairs, grain 1: a long context is one task, not a thread's
  // whole share.
  at::parallel_for(0, batch * n_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / n_kv_heads, h = task % n_kv_heads;
      const int64_t L = lens[b];
      scores.resize(group * L);
      const float* qb = q + (b * n_heads + h * group) * D;
      float* ob = out + (b * n_heads + h * group) * D;
      const int32_t* table = tables + b * max_blocks;
#if defined(__AVX512F__)
      if (fast != nullptr) {
        fast(qb, k_pool, v_pool, table, L, h, block_size, slot_stride, scale, scores.data(), ob);
        continue;
      }
#endif
#if defined(__AVX2__) && defined(__FMA__)
      if (fast2 != nullptr) {
        fast2(qb, k_pool, v_pool, table, L, h, group, block_size, slot_stride, scale,
              scores.data(), ob);
        continue;
      }
#endif
      decode_task_scalar<kv_t>(qb, k_pool, v_pool, table, L, h, group, D, block_size,
                               slot_stride, scale, scores.data(), ob);
    }
  });
}

// q: (B, Hq, D) float32; k_pool, v_pool: (slots, Hkv, D) of one layer; block_tables: (B, M)
// int32; context_lens: (B,) int32. Returns (B, Hq, D) float32.
at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_pool,
                                  const at::Tensor& v_pool, const at::Tensor& block_tables,
                                  const at::Tensor& context_lens, int64_t block_size,
                                  double scale) {
  TORCH_CHECK(q.device().is_cpu(), "paged_decode_attention runs on the CPU");
  TORCH_CHECK(q.scalar_type() == at::kFloat, "q must be float32");
  TORCH_CHECK(q.dim() == 3 && k_pool.dim() == 3, "q (B, Hq, D) and k_pool (slots, Hkv, D)");
  TORCH_CHECK(k_pool.scalar_type() == v_pool.scalar_type(), "K and V pools differ in dtype");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && context_lens.scalar_type() == at::kInt,
              "block_tables and context_lens must be int32");
  const auto qc = q.contiguous();
  const auto tables = block_tables.contiguous();
  const auto lens = context_lens.contiguous();
  TORCH_CHECK(k_pool.is_contiguous() && v_pool.is_contiguous(), "KV pools must be contiguous");
  const int64_t B = qc.size(0), Hq = qc.size(1), D = qc.size(2), Hkv = k_pool.size(1);
  TORCH_CHECK(Hq % Hkv == 0 && k_pool.size(2) == D, "head shapes do not match");
  auto out = at::empty_like(qc);
  const int64_t M = tables.size(1);
  const float sc = static_cast<float>(scale);
  const float* qp = qc.data_ptr<float>();
  const int32_t* tp = tables.data_ptr<int32_t>();
  const int32_t* lp = lens.data_ptr<int32_t>();
  float* op = out.data_ptr<float>();
  switch (k_pool.scalar_type()) {
    case at::kFloat:
      decode_kernel<float>(qp, k_pool.data_ptr<float>(), v_pool.data_ptr<float>(), tp, lp, op, B,
                           Hq, Hkv, D, M, block_size, Hkv * D, sc);
      break;
    case at::kBFloat16:
      decode_kernel<c10::BFloat16>(qp, k_pool.data_ptr<c10::BFloat16>(),
                                   v_pool.data_ptr<c10::BFloat16>(), tp, lp, op, B, Hq, Hkv, D, M,
                                   block_size, Hkv * D, sc);
      break;
    case at::kHalf:
      decode_kernel<c10::Half>(qp, k_pool.data_ptr<c10::Half>(), v_pool.data_ptr<c10::Half>(), tp,
                               lp, op, B, Hq, Hkv, D, M, block_size, Hkv * D, sc);
      break;
    default:
      TORCH_CHECK(false, "KV pools must be float32, bfloat16 or float16, not ",
                  k_pool.scalar_type());
  }
  return out;
}

// Rotary embedding on Q and K (GGUF layout: rotary pairs (2i, 2i+1)) and the KV cache write,
// fused: qkv (T, (Hq + 2 Hkv) D) float32 from the QKV projection; cos/sin (positions, D/2)
// float32; positions (T,) int64; slots (T,) int64. K (rotated) and V go into the pools at
// their slots in the pools' dtype; returns the rotated Q, (T, Hq, D) float32.
template <typename kv_t>
void rope_cache_kernel(const float* qkv, const float* cos, const float* sin,
                       const int64_t* positions, const int64_t* slots, float* q_out,
                       kv_t* k_pool, kv_t* v_pool, int64_t T, int64_t Hq, int64_t Hkv,
                       int64_t D) {
  const int64_t row = (Hq + 2 * Hkv) * D, half = D / 2;
  at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* c = cos + positions[t] * half;
      const float* s = sin + positions[t] * half;
      const float* src = qkv + t * row;
      for (int64_t h = 0; h < Hq; ++h) {
        const float* x = src + h * D;
        float* o = q_out + (t * Hq + h) * D;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          o[2 * i] = x[2 * i] * c[i] - x[2 * i + 1] * s[i];
          o[2 * i + 1] = x[2 * i] * s[i] + x[2 * i + 1] * c[i];
        }
      }
      kv_t* kd = k_pool + slots[t] * Hkv * D;
      for (int64_t h = 0; h < Hkv; ++h) {
        const float* x = src + (Hq + h) * D;
        kv_t* o = kd + h * D;
        for (int64_t i = 0; i < half; ++i) {
          o[2 * i] = static_cast<kv_t>(x[2 * i] * c[i] - x[2 * i + 1] * s[i]);
          o[2 * i + 1] = static_cast<kv_t>(x[2 * i] * s[i] + x[2 * i + 1] * c[i]);
        }
      }
      const float* v = src + (Hq + Hkv) * D;
      kv_t* vd = v_pool + slots[t] * Hkv * D;
      for (int64_t i = 0; i < Hkv * D; ++i) vd[i] = static_cast<kv_t>(v[i]);
    }
  });
}

at::Tensor rope_and_cache(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                          const at::Tensor& positions, const at::Tensor& slots,
                          at::Tensor k_pool, at::Tensor v_pool, int64_t n_heads) {
  TORCH_CHECK(qkv.device().is_cpu() && qkv.scalar_type() == at::kFloat && qkv.dim() == 2,
              "qkv must be a 2-D float32 CPU tensor");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat &&
                  cos.is_contiguous() && sin.is_contiguous(),
              "cos and sin must be contiguous float32");
  TORCH_CHECK(positions.scalar_type() == at::kLong && slots.scalar_type() == at::kLong,
              "positions and slots must be int64");
  TORCH_CHECK(k_pool.is_contiguous() && v_pool.is_contiguous() &&
                  k_pool.scalar_type() == v_pool.scalar_type(),
              "KV pools must be contiguous and of one dtype");
  const auto x = qkv.contiguous();
  const auto pos = positions.contiguous();
  const auto sl = slots.contiguous();
  const int64_t T = x.size(0), Hkv = k_pool.size(1), D = k_pool.size(2);
  TORCH_CHECK(x.size(1) == (n_heads + 2 * Hkv) * D && cos.size(1) * 2 == D,
              "qkv, pool and rotary shapes do not match");
  TORCH_CHECK(pos.size(0) == T && sl.size(0) == T, "one position and one slot per token");
  auto q = at::empty({T, n_heads, D}, x.options());
  switch (k_pool.scalar_type()) {
#define SY_ROPE(type, ctype)                                                                 \
  case type:                                                                                 \
    rope_cache_kernel<ctype>(x.data_ptr<float>(), cos.data_ptr<float>(), sin.data_ptr<float>(), \
                             pos.data_ptr<int64_t>(), sl.data_ptr<int64_t>(), q.data_ptr<float>(), \
                             k_pool.data_ptr<ctype>(), v_pool.data_ptr<ctype>(), T, n_heads, Hkv, D); \
    break;
    SY_ROPE(at::kFloat, float)
    SY_ROPE(at::kBFloat16, c10::BFloat16)
    SY_ROPE(at::kHalf, c10::Half)
#undef SY_ROPE
    default:
      TORCH_CHECK(false, "KV pools must be float32, bfloat16 or float16");
  }
  return q;
}

}  // namespace

TORCH_LIBRARY(switchyard, m) {
  m.def(
      "paged_decode_attention(Tensor q, Tensor k_pool, Tensor v_pool, Tensor block_tables, "
      "Tensor context_lens, int block_size, float scale) -> Tensor");
  m.def(
      "rope_and_cache(Tensor qkv, Tensor cos, Tensor sin, Tensor positions, Tensor slots, "
      "Tensor(a!) k_pool, Tensor(b!) v_pool, int n_heads) -> Tensor");
  m.impl("paged_decode_attention", c10::DispatchKey::CPU, &paged_decode_attention);
  m.impl("rope_and_cache", c10::DispatchKey::CPU, &rope_and_cache);
}
