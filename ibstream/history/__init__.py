"""IB's historical ticks, shared by server and client: `order` (numpy: the merged order of
BID_ASK / TRADES / MIDPOINT within IB's one-second times) and `merge` (`merge_history`: that
order as a tick frame). Importing the package imports neither."""
