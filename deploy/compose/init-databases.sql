-- One database per node (run once by the postgres image on an empty data volume).
CREATE DATABASE mpc_node1;
CREATE DATABASE mpc_node2;
CREATE DATABASE mpc_node3;
CREATE DATABASE mpc_node4;
CREATE DATABASE mpc_node5;
