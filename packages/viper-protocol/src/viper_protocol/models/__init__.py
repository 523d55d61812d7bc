"""The frozen attrs models of Viper's wire protocol, one module per surface."""
