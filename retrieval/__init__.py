"""loragate retrieval: ingestion, chunking, embeddings and FAISS indexes (see issue 3)."""
