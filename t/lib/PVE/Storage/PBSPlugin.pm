package PVE::Storage::PBSPlugin;

use strict;
use warnings;

use PVE::TestNode;
use PVE::Tools;

my sub private_storage_dir { return PVE::TestNode::etc_pve() . "/priv/storage" }

sub pbs_password_file_name {
    my ($scfg, $storeid) = @_;
    return private_storage_dir() . "/$storeid.pw";
}

sub pbs_get_password {
    my ($scfg, $storeid) = @_;
    my $pwfile = pbs_password_file_name($scfg, $storeid);
    return PVE::Tools::file_read_firstline($pwfile);
}

sub pbs_encryption_key_file_name {
    my ($scfg, $storeid) = @_;
    return private_storage_dir() . "/$storeid.enc";
}

sub pbs_master_pubkey_file_name {
    my ($scfg, $storeid) = @_;
    return private_storage_dir() . "/$storeid.master.pem";
}

1;
