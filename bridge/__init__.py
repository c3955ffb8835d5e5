"""bridge: cryptolisting.ws announcements -> strategy plugins -> ccxt orders."""
