# The recorder's inline policy as docs/reference/aws-contract.md lists it,
# statement for statement the provisioner's (provisioner/src/aws/spec/
# policy.rs). Pure: no provider, so tests render it offline and compare it
# with the contract.

locals {
  name = "causeway-recordings"

  statements = concat(
    [
      {
        Sid      = "WriteRecordings"
        Effect   = "Allow"
        Action   = ["s3:AbortMultipartUpload", "s3:PutObject"]
        Resource = "${var.bucket_arn}/*"
      },
      {
        Sid      = "LocateBucket"
        Effect   = "Allow"
        Action   = "s3:GetBucketLocation"
        Resource = var.bucket_arn
      },
    ],
    var.ui ? [
      {
        Sid      = "ReadRecordings"
        Effect   = "Allow"
        Action   = "s3:GetObject"
        Resource = "${var.bucket_arn}/*"
      },
      {
        Sid      = "ListRecordings"
        Effect   = "Allow"
        Action   = "s3:ListBucket"
        Resource = var.bucket_arn
      },
    ] : [],
    # SSE-KMS: a data key per object, and Decrypt to complete a multipart
    # upload (and to read recordings back).
    var.kms_key_arn == null ? [] : [
      {
        Sid      = "UseRecordingsKey"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = var.kms_key_arn
      },
    ],
  )
}
