// Fused scoring + top-k, pass 1 of 2 (template: wgpu_backend.py fills the {{...}} parts).
//
// One workgroup = 256 threads = a tile of 128 queries x a run of 128-vector tiles (a "split").
// For each vector tile it computes the 128x128 dot products with register blocking (each
// thread an 8x8 block, operands staged through workgroup memory in BK=16 slices, the next
// slice prefetched into registers while the current one is used), turns them into keys
// (smaller is better: -q.x for cosine/ip, ||x||^2 - 2 q.x for l2; +inf for masked or padding
// rows) and offers every key that beats its query's current threshold to a small per-query
// candidate buffer in workgroup memory. One owner thread per query then folds the buffer into
// that query's k-list for this split, kept in device memory (unsorted; the threshold is its
// largest key). Full lists also publish their threshold to a per-query bound shared by all
// workgroups (GT, atomicMax of an order-preserving encoding): a list of k keys <= t proves the
// query's k-th best is <= t, so every workgroup may drop keys >= the best published t, which
// cuts the insertions of later workgroups. Only the per-split lists leave the workgroup;
// select.wgsl merges them. The score matrix is never written anywhere.

struct Params {
  n: u32,               // rows in this chunk
  d_pad: u32,           // padded dimension (multiple of 16)
  kp: u32,              // list length (k rounded up to a multiple of 4)
  s_total: u32,         // splits over all chunks (list stride)
  split_offset: u32,    // first split index of this chunk
  tiles_per_split: u32,
  row_offset: u32,      // global row index of this chunk's first row
  use_mask: u32,
  coef: f32,            // 1 (cosine/ip) or 2 (l2)
  use_norms: u32,       // 1 for l2
  inf_bits: u32,        // 0x7f800000 (no infinite constants in WGSL)
  skip_topk: u32,      // diagnostic: 1 = score only (times the matrix product alone)
  use_bound: u32,      // 1 = share thresholds between workgroups through GT
  pad1: u32,
  pad2: u32,
  pad3: u32,
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> X: array<{{XELEM}}>;
@group(0) @binding(3) var<storage, read> XN: array<f32>;
@group(0) @binding(4) var<storage, read> MASK: array<u32>;
@group(0) @binding(5) var<storage, read_write> CK: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> CI: array<u32>;
@group(0) @binding(7) var<storage, read_write> GT: array<atomic<u32>>;  // 0 = no bound yet

const TQ: u32 = 128u;
const TV: u32 = 128u;
const BK: u32 = 16u;
const NB: u32 = {{NB}}u;  // candidate slots per query
const KP: u32 = {{KP}}u;  // list length: k rounded up to a multiple of 4
const KP4: u32 = KP / 4u;

var<workgroup> Qs: array<vec4<f32>, 512>;  // [BK][TQ/4], transposed
var<workgroup> Xs: array<vec4<f32>, 512>;  // [BK][TV/4], transposed
var<workgroup> thr_s: array<f32, 128>;
var<workgroup> cnt: array<atomic<u32>, 128>;
var<workgroup> bk: array<f32, {{NBTQ}}>;
var<workgroup> bi: array<u32, {{NBTQ}}>;
var<workgroup> vote: u32;

fn load_x(row: u32, col: u32) -> vec4<f32> {
  {{LOADX}}
}

// order-preserving float <-> u32 (so atomics can take the minimum of keys)
fn ord_key(f: f32) -> u32 {
  let b = bitcast<u32>(f);
  if ((b & 0x80000000u) != 0u) { return ~b; }
  return b | 0x80000000u;
}

fn unord_key(u: u32) -> f32 {
  if ((u & 0x80000000u) != 0u) { return bitcast<f32>(u & 0x7fffffffu); }
  return bitcast<f32>(~u);
}

fn row_ok(v: u32) -> bool {
  if (v >= P.n) { return false; }
  if (P.use_mask != 0u) {
    let g = P.row_offset + v;
    return ((MASK[g >> 5u] >> (g & 31u)) & 1u) != 0u;
  }
  return true;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let tx = tid & 15u;
  let ty = tid >> 4u;
  let qt = wid.x;
  let sl = wid.y;
  let inf = bitcast<f32>(P.inf_bits);
  let n_tiles = (P.n + TV - 1u) / TV;
  let t_begin = sl * P.tiles_per_split;
  let t_end = min(t_begin + P.tiles_per_split, n_tiles);
  let nkb = P.d_pad / BK;

  // owner state: thread tid < TQ owns query qt*TQ + tid of this split
  var thr = inf;
  var maxpos = 0u;
  var filled = 0u;
  let lbase = ((qt * TQ + tid) * P.s_total + P.split_offset + sl) * KP;
  if (tid < TQ) {
    for (var j = 0u; j < KP4; j += 1u) {
      CK[lbase / 4u + j] = vec4<f32>(inf);
      CI[lbase + 4u * j] = 0xffffffffu;
      CI[lbase + 4u * j + 1u] = 0xffffffffu;
      CI[lbase + 4u * j + 2u] = 0xffffffffu;
      CI[lbase + 4u * j + 3u] = 0xffffffffu;
    }
    thr_s[tid] = inf;
    atomicStore(&cnt[tid], 0u);
  }
  if (tid == 0u) { vote = 0u; }
  var stamp = 1u;

  // loader role: rows lr and lr + 64 of each tile, 4 columns from lc
  let lr = tid >> 2u;
  let lc = (tid & 3u) * 4u;
  let qrow_a = (qt * TQ + lr) * P.d_pad + lc;
  let qrow_b = (qt * TQ + lr + 64u) * P.d_pad + lc;
  let sidx = lc * 32u + (lr >> 2u);
  let scomp = lr & 3u;

  for (var t = t_begin; t < t_end; t += 1u) {
    let v0 = t * TV;
    {{ACC_DECL}}
    var pqa = Q[qrow_a / 4u];
    var pqb = Q[qrow_b / 4u];
    var pxa = load_x(v0 + lr, lc);
    var pxb = load_x(v0 + lr + 64u, lc);
    for (var kb = 0u; kb < nkb; kb += 1u) {
      workgroupBarrier();
      {{STORE_TILES}}
      workgroupBarrier();
      if (kb + 1u < nkb) {
        let c = (kb + 1u) * BK;
        pqa = Q[(qrow_a + c) / 4u];
        pqb = Q[(qrow_b + c) / 4u];
        pxa = load_x(v0 + lr, lc + c);
        pxb = load_x(v0 + lr + 64u, lc + c);
      }
      {{FMA}}
    }

    if (P.skip_topk != 0u) {
      // keep the product live without selecting: a store that never happens for finite data
      let s = {{ACC_SUM}};
      if (s == inf) { CK[lbase / 4u] = vec4<f32>(s); }
      continue;
    }
    // ---- tighten each query's threshold with the bound published by other workgroups
    if (tid < TQ && P.use_bound != 0u) {
      let g = atomicLoad(&GT[qt * TQ + tid]);
      if (g != 0u) { thr_s[tid] = min(thr_s[tid], unord_key(~g)); }
    }
    workgroupBarrier();
    // ---- keys and pending bits (bit r*8 + c*4 + e of pa/pb: query r, vector group c, lane e)
    {{KEYS}}
    // ---- offer candidates until every pending key is placed or beaten by its threshold
    loop {
      {{PUSH}}
      if ((pa | pb) != 0u) { vote = stamp; }
      workgroupBarrier();
      if (tid < TQ) {
        let m = min(atomicLoad(&cnt[tid]), NB);
        for (var e = 0u; e < m; e += 1u) {
          let kv = bk[tid * NB + e];
          if (kv < thr) {
            var pos = maxpos;
            if (filled < KP) { pos = filled; filled += 1u; }
            CK[lbase / 4u + (pos >> 2u)][pos & 3u] = kv;
            CI[lbase + pos] = bi[tid * NB + e];
            if (filled >= KP) {
              var mx = -inf;
              var mp = 0u;
              for (var j = 0u; j < KP4; j += 1u) {
                let w = CK[lbase / 4u + j];
                if (w.x > mx) { mx = w.x; mp = 4u * j; }
                if (w.y > mx) { mx = w.y; mp = 4u * j + 1u; }
                if (w.z > mx) { mx = w.z; mp = 4u * j + 2u; }
                if (w.w > mx) { mx = w.w; mp = 4u * j + 3u; }
              }
              thr = mx;
              maxpos = mp;
              if (P.use_bound != 0u) { atomicMax(&GT[qt * TQ + tid], ~ord_key(thr)); }
            }
          }
        }
        thr_s[tid] = min(thr_s[tid], thr);
        atomicStore(&cnt[tid], 0u);
      }
      let more = workgroupUniformLoad(&vote);
      if (more != stamp) { break; }
      stamp += 1u;
    }
    stamp += 1u;
  }
}
