"""The pipeline's stage runners (one function per DVC stage), MLflow tracking and the methods report.

The top of the library: stages/, flows/ and the CLI call into here; nothing in vidssl imports it back.
"""
