"""The offline inference wing: an export folder → predictions, with no HTTP. `engine.VLMInference` scores clips;
`annotator` labels a whole recording with it; `recordings`, `segments` and `prediction_outputs` open the input and
write the outputs. The `annotate` command uses it directly; `serving/` puts HTTP in front of it."""
