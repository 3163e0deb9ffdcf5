"""The engine: turns a validated workflow into tasks and decides what runs when."""
