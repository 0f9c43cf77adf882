/** Connection errors raised before the request left: any call may go to another node. */
export const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);
/** Connection errors that may come after the node received (and acted on) the request. */
const CONNECTION_LOST = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/** The system error code behind a failed fetch (undici wraps it in `cause`, sometimes in an AggregateError). */
export function connectionErrorCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: string; errors?: { code?: string }[] } })?.cause;
  return cause?.code ?? cause?.errors?.[0]?.code ?? (err as { code?: string })?.code;
}

/** Whether the connection dropped after the request may have reached the node: its answer may be lost. */
export function answerMayBeLost(err: unknown): boolean {
  return CONNECTION_LOST.has(connectionErrorCode(err) ?? '');
}

/** Whether a connection error means the node is gone (rather than a bad request): move to the next node. */
export function isNodeFailure(err: unknown): boolean {
  const code = connectionErrorCode(err);
  return code !== undefined && (NOT_SENT.has(code) || CONNECTION_LOST.has(code));
}
