"""The streaming server: hub, subscribers, transports, the app and running it."""
