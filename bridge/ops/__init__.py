"""Operations: what the person running bridge sees and what systemd talks to.

Logging set-up (`logs`), alerts to a webhook or Telegram (`notify`), /health and /metrics over HTTP
(`health`), sd_notify readiness and watchdog (`sdnotify`), and the alert counters (`metrics`). Ops may
read the feed's and trading's state and counters; nothing in feed, trading or venues imports ops.
"""
