"""The pure core: values in, values out. Nothing here does I/O, reads clocks or imports asyncio."""
