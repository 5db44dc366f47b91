"""Thin rclpy nodes. Each declares its parameters in one table, wires topics, and delegates to the library."""
