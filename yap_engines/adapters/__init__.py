"""One module per backend; only that module imports the backend's packages."""
