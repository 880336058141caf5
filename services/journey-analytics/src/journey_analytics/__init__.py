"""Journey analytics: omnichannel measured over the whole journey, not per channel."""
