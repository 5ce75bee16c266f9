// Calls to Arbiter's HTTP API. Every answer that is not 2xx becomes an ApiError
// carrying the server's {error: {code, message, field, diagnostics?}}.

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.field = error.field;
    this.diagnostics = error.diagnostics || [];
  }
}

export function apiKey() {
  return sessionStorage.getItem("arbiter-key") || "";
}

export async function call(method, path, body, extraHeaders = {}) {
  const headers = { ...extraHeaders };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let payload;
  if (typeof body === "string") {
    headers["Content-Type"] = "text/plain; charset=utf-8";
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: { message: text } }; }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || {});
  return data;
}
