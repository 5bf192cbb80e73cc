"""Adapters that let RAG frameworks use an M2M collection as their vector store.

- :mod:`m2m.integrations.langchain`: ``M2MVectorStore`` for LangChain (``pip install 'm2m-vector-search[langchain]'``).
- :mod:`m2m.integrations.llama_index`: ``M2MVectorStore`` for LlamaIndex (``[llamaindex]``).

Importing this package imports neither framework; each submodule imports its own
framework when it is imported. See ``docs/integrations.md``.
"""

__all__: list[str] = []
