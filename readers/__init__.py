"""Badge readers: capture frames from a turnstile camera, decode the QR badges in them, ask the gateway."""
