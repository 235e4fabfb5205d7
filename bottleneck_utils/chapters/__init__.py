"""What the book imports: each chapter's measurements and claims. Imports the pipeline and the organisms."""
