"""Use cases for the outside world: the RPC facade the chat calls (service), analytics, the one
reconciler for every venue, and the replay driver."""
