"""Everything that talks to TWS / IB Gateway: the API seam, contracts and the tick source."""
