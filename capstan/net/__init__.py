"""Network access to what tenants name: the URL policy and the clients that honour it."""
