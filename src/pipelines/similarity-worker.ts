/**
 * Runs on a piscina worker thread: finds the centroid most similar (cosine) to a vector. The
 * centroids sit in a SharedArrayBuffer, so the matrix is never copied between threads; only the
 * vector and the answer travel.
 */
export default function nearest({ buffer, rows, dims, vector }: { buffer: SharedArrayBuffer; rows: number; dims: number; vector: number[] }): {
  row: number;
  similarity: number;
} {
  const m = new Float32Array(buffer, 0, rows * dims);
  let vNorm = 0;
  for (let j = 0; j < dims; j++) vNorm += vector[j] * vector[j];
  vNorm = Math.sqrt(vNorm) || 1;
  let best = -1;
  let bestScore = -Infinity;
  for (let i = 0; i < rows; i++) {
    let dot = 0;
    let norm = 0;
    const base = i * dims;
    for (let j = 0; j < dims; j++) {
      const c = m[base + j];
      dot += c * vector[j];
      norm += c * c;
    }
    const score = dot / ((Math.sqrt(norm) || 1) * vNorm);
    if (score > bestScore) {
      bestScore = score;
      best = i;
    }
  }
  return { row: best, similarity: best < 0 ? 0 : bestScore };
}
