"""`jaxcult serve`: the OpenAI API over the generation engine (protocol shapes, a batching
scheduler, the Starlette app); `jaxcult.run.serve` loads the models and runs it."""
