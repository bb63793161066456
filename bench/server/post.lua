-- wrk script: POST the body from $BODY_FILE to the URL given on the command line: JSON, or
-- with $HEADER_LENGTH set, an OIP v2 binary-tensor body (JSON header + raw tensors).
wrk.method = "POST"
local split = os.getenv("HEADER_LENGTH")
if split and split ~= "" then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = split
else
  wrk.headers["Content-Type"] = "application/json"
end
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
