"""What a batch is and where its results live: batch files, job records, storage and the CLI."""
