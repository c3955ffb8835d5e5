"""One module per venue family: its `Dialect` subclass (see bridge.venues.dialect), chosen by ccxt class."""
