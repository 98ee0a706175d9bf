"""The iSCSI session layer shared by initiator and target: sequence numbers, login, tasks."""
