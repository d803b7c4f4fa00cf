"""The runstream command: up, token, status, failed, cleanup, rebuild, tail."""
