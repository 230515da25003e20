"""One module per channel, all built on channels.base.Channel."""
