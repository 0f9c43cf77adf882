import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';

const decoders: Record<string, (b: Buffer) => Buffer> = { br: brotliDecompressSync, gzip: gunzipSync, deflate: inflateSync };

export interface RawReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/**
 * One request on a connection of its own, with whatever path, headers and body bytes the caller
 * gives (fetch would refuse or repair many of them). Fails if no answer comes within timeoutMs:
 * a server that hangs is as wrong as one that crashes.
 */
export function sendRaw(
  url: string,
  req: { method: string; path: string; headers: Record<string, string | string[]>; body?: Buffer },
  timeoutMs = 30_000,
): Promise<RawReply> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    // Without a length node:http sends a GET's or DELETE's body unframed, which is not HTTP.
    const headers = req.body ? { 'content-length': String(req.body.length), ...req.headers } : req.headers;
    const r = httpRequest({ host: hostname, port, method: req.method, path: req.path, headers, agent: false, timeout: timeoutMs }, (res) => {
      // An event stream that was opened is the answer: it ends only when its task does.
      if (res.statusCode === 200 && String(res.headers['content-type']).startsWith('text/event-stream')) {
        r.destroy();
        return resolve({ status: 200, headers: res.headers, text: '' });
      }
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          const body = Buffer.concat(chunks);
          const decode = decoders[String(res.headers['content-encoding'])];
          resolve({ status: res.statusCode!, headers: res.headers, text: (decode ? decode(body) : body).toString() });
        } catch (err) {
          reject(err);
        }
      });
      res.on('error', reject);
    });
    r.on('timeout', () => r.destroy(new Error(`no answer to ${req.method} ${req.path.slice(0, 200)} within ${timeoutMs} ms`)));
    r.on('error', reject);
    r.end(req.body);
  });
}

/**
 * Bytes straight onto a socket, for requests node:http will not even send (raw bytes in the path,
 * broken chunked encoding); reads until the server closes the connection.
 */
export function sendBytes(url: string, bytes: Buffer, timeoutMs = 30_000): Promise<RawReply> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) });
    const chunks: Buffer[] = [];
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const raw = Buffer.concat(chunks).toString('latin1');
      const [head, ...rest] = raw.split('\r\n\r\n');
      const [statusLine, ...headerLines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of headerLines) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ status: Number(statusLine.split(' ')[1]), headers, text: Buffer.from(rest.join('\r\n\r\n'), 'latin1').toString() });
    });
    socket.write(bytes);
  });
}
