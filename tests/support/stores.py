"""Object-store fixtures (local directory, moto in-process, ThreadedMotoServer)."""
