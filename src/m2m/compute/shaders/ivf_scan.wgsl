// Inverted-list scan: for each query, its probed lists' blocks, keeping the best KP keys.
//
// One workgroup per query, one thread per row of a block (S = 128 rows). Blocks are stored
// dimension-major (block b, dimension j, row t at (b - block_lo) * d * S + j * S + t), so the
// threads of a workgroup read consecutive words for each dimension. The query sits in
// workgroup memory. key = HB[row] - q·x (smaller is better; +inf on padding rows). Each
// thread keeps its own sorted KP best in registers and writes them to its slot of the
// candidate buffer (query, chunk, thread); select.wgsl merges a query's S * n_chunks lists.
// A dispatch covers the blocks [block_lo, block_hi) of one buffer chunk.

struct Params {
  nq: u32,
  d: u32,
  nprobe: u32,
  block_lo: u32,
  block_hi: u32,
  n_chunks: u32,
  chunk: u32,
  inf_bits: u32,
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> HB: array<f32>;
@group(0) @binding(4) var<storage, read> LISTS: array<u32>;
@group(0) @binding(5) var<storage, read> BSTART: array<u32>;
@group(0) @binding(6) var<storage, read_write> CK: array<f32>;
@group(0) @binding(7) var<storage, read_write> CI: array<u32>;

const S: u32 = 128u;
const D: u32 = {{D}}u;
const KP: u32 = {{KP}}u;

var<workgroup> qs: array<f32, D>;

@compute @workgroup_size(128)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let q = wid.x + wid.y * 65535u;
  if (q >= P.nq) { return; }  // uniform: the same for the whole workgroup
  for (var j = t; j < P.d; j += S) {
    qs[j] = Q[q * P.d + j];
  }
  workgroupBarrier();
  let inf = bitcast<f32>(P.inf_bits);
  var bk: array<f32, KP>;
  var bi: array<u32, KP>;
  for (var i = 0u; i < KP; i += 1u) {
    bk[i] = inf;
    bi[i] = 0xffffffffu;
  }
  let d4 = P.d & ~3u;
  for (var p = 0u; p < P.nprobe; p += 1u) {
    let l = LISTS[q * P.nprobe + p];
    let b0 = max(BSTART[l], P.block_lo);
    let b1 = min(BSTART[l + 1u], P.block_hi);
    for (var b = b0; b < b1; b += 1u) {
      let base = (b - P.block_lo) * P.d * S + t;
      var a0 = 0.0;
      var a1 = 0.0;
      var a2 = 0.0;
      var a3 = 0.0;
      var j = 0u;
      for (; j < d4; j += 4u) {
        let o = base + j * S;
        a0 = fma(qs[j], X[o], a0);
        a1 = fma(qs[j + 1u], X[o + S], a1);
        a2 = fma(qs[j + 2u], X[o + 2u * S], a2);
        a3 = fma(qs[j + 3u], X[o + 3u * S], a3);
      }
      for (; j < P.d; j += 1u) {
        a0 = fma(qs[j], X[base + j * S], a0);
      }
      let key = HB[b * S + t] - ((a0 + a1) + (a2 + a3));
      if (key < bk[KP - 1u]) {
        var i = KP - 1u;
        loop {
          if (i == 0u) { break; }
          if (!(key < bk[i - 1u])) { break; }
          bk[i] = bk[i - 1u];
          bi[i] = bi[i - 1u];
          i -= 1u;
        }
        bk[i] = key;
        bi[i] = b * S + t;
      }
    }
  }
  let out = ((q * P.n_chunks + P.chunk) * S + t) * KP;
  for (var i = 0u; i < KP; i += 1u) {
    CK[out + i] = bk[i];
    CI[out + i] = bi[i];
  }
}
