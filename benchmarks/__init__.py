"""kdbench's harness: datasets, model zoo, training loop, teachers, presets and the grid runner."""
