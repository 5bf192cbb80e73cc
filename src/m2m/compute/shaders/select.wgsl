// Top-k merge, pass 2 of 2: for each query, the best kp of its s_total per-split lists.
//
// One workgroup per query. Workgroup memory holds T = 1024 (key, index) pairs: the current
// best kp (sorted, at the front) plus the next T - kp candidates; a bitonic sort of the T
// pairs (ordered by key, then index, so ties resolve to the lower index) leaves the new best
// kp at the front. Repeats until every candidate has been seen; writes kp sorted pairs.

struct Params {
  nq: u32,
  s_total: u32,
  kp: u32,
  inf_bits: u32,
};

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> CK: array<f32>;
@group(0) @binding(2) var<storage, read> CI: array<u32>;
@group(0) @binding(3) var<storage, read_write> OK: array<f32>;
@group(0) @binding(4) var<storage, read_write> OI: array<u32>;

const T: u32 = 1024u;
const WG: u32 = 256u;

var<workgroup> sk: array<f32, 1024>;
var<workgroup> si: array<u32, 1024>;

fn before(ka: f32, ia: u32, kb: f32, ib: u32) -> bool {
  return ka < kb || (ka == kb && ia < ib);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let q = wid.x + wid.y * 65535u;
  if (q >= P.nq) { return; }  // uniform: the same for the whole workgroup
  let inf = bitcast<f32>(P.inf_bits);
  let total = P.s_total * P.kp;
  let base = q * total;

  var consumed = 0u;
  var start = 0u;  // first slot to refill
  loop {
    for (var s = start + tid; s < T; s += WG) {
      let c = consumed + (s - start);
      if (c < total) {
        sk[s] = CK[base + c];
        si[s] = CI[base + c];
      } else {
        sk[s] = inf;
        si[s] = 0xffffffffu;
      }
    }
    consumed += T - start;
    start = P.kp;
    for (var size = 2u; size <= T; size <<= 1u) {
      for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        for (var e = tid; e < T / 2u; e += WG) {
          let lo = 2u * e - (e & (stride - 1u));
          let hi = lo + stride;
          let ka = sk[lo];
          let ia = si[lo];
          let kb = sk[hi];
          let ib = si[hi];
          let asc = (lo & size) == 0u;
          if (before(kb, ib, ka, ia) == asc) {
            sk[lo] = kb;
            si[lo] = ib;
            sk[hi] = ka;
            si[hi] = ia;
          }
        }
      }
    }
    workgroupBarrier();
    if (consumed >= total) { break; }
  }
  for (var j = tid; j < P.kp; j += WG) {
    OK[q * P.kp + j] = sk[j];
    OI[q * P.kp + j] = si[j];
  }
}
