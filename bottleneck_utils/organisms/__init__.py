"""The model organisms: recipes, training, data and quality bars. Imports the pipeline, never a chapter."""
