"""moto's server as the local stack runs it: moto itself, with its AWS IoT control plane made to
answer as AWS IoT does in the two ways the rogue-device gate relies on.

- Certificate ids are the SHA-256 of the certificate's DER encoding, as on AWS (moto's own setting
  iot.use_valid_cert; its default hashes the PEM text).
- DescribeCertificate names the CA that issued the certificate (caCertificateId), as AWS's
  does (https://docs.aws.amazon.com/iot/latest/apireference/API_CertificateDescription.html);
  moto records it but leaves it out of that answer.

Arguments are moto_server's (-H host -p port).
"""

from moto.core.config import default_user_config
from moto.iot import models as iot
from moto.server import main

default_user_config["iot"] = {"use_valid_cert": True}

_describe = iot.FakeCertificate.to_description_dict


def _describe_with_ca(certificate):
    description = _describe(certificate)
    if getattr(certificate, "ca_certificate_id", None):
        description["caCertificateId"] = certificate.ca_certificate_id
    return description


iot.FakeCertificate.to_description_dict = _describe_with_ca

if __name__ == "__main__":
    main()
