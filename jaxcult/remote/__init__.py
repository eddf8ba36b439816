"""Models behind an OpenAI-compatible HTTP API (vLLM, SGLang, llama.cpp's server, a hosted API,
`jaxcult serve`) as chat models for the pipeline stages: settings, a retrying client, a response
cache that makes resumed stages free, and the `RemoteChatModel` backend."""
