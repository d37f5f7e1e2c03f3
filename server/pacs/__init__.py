"""PACS connectivity orchestration (issue 3): queries, retrieve/send/commitment jobs."""
