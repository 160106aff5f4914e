"""Browser tests: the web wizard driven by headless Chromium against a real portal and agent."""
